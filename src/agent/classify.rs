//! Turns a finished phase run into a [`PhaseVerdict`] the daemon branches on.
//!
//! A run succeeded only if a `result` event arrived with `subtype: "success"`
//! and `is_error: false`, whatever the exit code and even after a timeout
//! (docs/design.md §4). Everything else is a [`PhaseFailure`] that says what to do
//! next: wait for a usage limit, retry with backoff, fix credentials, or count
//! a failed phase. The rules follow the CLI's observed error behaviour, which
//! `tests/it/real_cli.rs` checks against the CLI version pinned in
//! `.ci/install-claude`.
//!
//! Pure: the caller passes the clock (`now`); reading a usage limit's reset
//! time from the message is `usage_limit`'s job.

use std::fmt;

use jiff::Timestamp;

use crate::agent::stream::{RunResult, StreamSummary};
use crate::agent::usage_limit::{epoch_to_timestamp, parse_usage_limit};

/// What the user must do when the CLI has no valid credentials.
pub(crate) const AUTH_HINT: &str = "run `claude /login` or set a valid ANTHROPIC_API_KEY";

/// How much of an agent's error text a one-line message quotes.
const QUOTE_CHARS: usize = 300;

/// How a phase run's process ended, as seen by the runner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcessEnd {
    /// `None` when the process was killed by a signal.
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    /// Set when the runner stopped the process for taking too long.
    pub(crate) timed_out: Option<TimeoutKind>,
    /// The last lines of the process's stderr (bounded by the runner).
    pub(crate) stderr_tail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeoutKind {
    /// The phase ran longer than `phase_timeout`.
    WallClock,
    /// No output for `idle_timeout`.
    Idle,
}

/// The outcome of one phase run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PhaseVerdict {
    Success {
        /// The `result` text: the phase's output.
        result_text: String,
        /// Tools the agent was not allowed to use (worth a warning).
        permission_denials: Vec<String>,
    },
    Failed(PhaseFailure),
}

impl PhaseVerdict {
    #[cfg(test)]
    /// True when the run succeeded and its result text declares completion.
    pub(crate) fn declares_completion(&self) -> bool {
        match self {
            PhaseVerdict::Success { result_text, .. } => crate::blocks::is_completion(result_text),
            PhaseVerdict::Failed(_) => false,
        }
    }
}

/// Why a phase run failed, in the terms the daemon acts on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PhaseFailure {
    /// The subscription's usage limit: sleep until `resets_at` (+ margin) and
    /// re-run the phase; not a breaker failure, not an iteration.
    UsageLimit {
        /// `None` when the reset time could not be read.
        resets_at: Option<Timestamp>,
        /// `five_hour`, `seven_day` (from the event) or `session`, `weekly`,
        /// `Opus` (from the message).
        kind: String,
    },
    /// API rate limit, overload, 5xx or a connection problem: retry with
    /// backoff, a bounded number of times.
    Retryable { status: Option<u16>, reason: String },
    /// Missing or rejected credentials; retrying cannot help.
    Auth { detail: String },
    /// The API rejected the request itself (400 and other 4xx); not retried.
    BadRequest { status: u16, detail: String },
    /// `--max-turns` was reached (`error_max_turns`).
    MaxTurns { turns: Option<u32> },
    /// `--max-budget-usd` was reached (`error_max_budget_usd`).
    MaxBudget { cost_usd: f64 },
    /// `error_during_execution`, e.g. tools aborted by an interrupt.
    ExecutionError { detail: String },
    /// A result with `is_error: true` that matches nothing above.
    ErrorResult { text: String },
    /// The runner stopped the process for taking too long, before any result.
    Timeout(TimeoutKind),
    /// The process exited with code 0 but wrote no result line (the CLI does
    /// this when interrupted while waiting for the API).
    NoResult { exit_code: i32 },
    /// The CLI rejected its command line before starting (bad flag, refused
    /// permission mode): a configuration problem, retrying cannot help.
    Refused { message: String },
    /// The process failed or was killed without writing a result line.
    Crashed {
        exit_code: Option<i32>,
        signal: Option<i32>,
        stderr_tail: String,
    },
}

impl PhaseFailure {
    /// Worth running the same phase again after a backoff.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, PhaseFailure::Retryable { .. })
    }

    /// No later run can succeed until the user acts (credentials or
    /// configuration): the daemon should stop with a message.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            PhaseFailure::Auth { .. } | PhaseFailure::Refused { .. }
        )
    }
}

impl fmt::Display for PhaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhaseFailure::UsageLimit { resets_at, kind } => {
                write!(f, "usage limit reached ({kind}), ")?;
                match resets_at {
                    Some(resets_at) => write!(f, "resets at {resets_at}"),
                    None => f.write_str("reset time unknown"),
                }
            }
            PhaseFailure::Retryable { status, reason } => match status {
                Some(status) => write!(f, "transient API error {status}: {}", one_line(reason)),
                None => write!(f, "transient API error: {}", one_line(reason)),
            },
            PhaseFailure::Auth { detail } => {
                write!(
                    f,
                    "authentication failed ({}): {AUTH_HINT}",
                    one_line(detail)
                )
            }
            PhaseFailure::BadRequest { status, detail } => write!(
                f,
                "the API rejected the request ({status}), not retried: {}",
                one_line(detail)
            ),
            PhaseFailure::MaxTurns { turns } => match turns {
                Some(turns) => write!(
                    f,
                    "the agent hit the turn limit (max_turns) after {turns} turns"
                ),
                None => f.write_str("the agent hit the turn limit (max_turns)"),
            },
            PhaseFailure::MaxBudget { cost_usd } => write!(
                f,
                "the agent hit the per-phase budget (max_cost_per_phase_usd) at ${cost_usd:.2}"
            ),
            PhaseFailure::ExecutionError { detail } => {
                write!(f, "the agent failed during execution: {}", one_line(detail))
            }
            PhaseFailure::ErrorResult { text } => {
                write!(f, "the agent reported an error: {}", one_line(text))
            }
            PhaseFailure::Timeout(TimeoutKind::WallClock) => {
                f.write_str("the phase ran past its time limit (phase_timeout) without a result")
            }
            PhaseFailure::Timeout(TimeoutKind::Idle) => f.write_str(
                "the agent produced no output for too long (idle_timeout) and was stopped",
            ),
            PhaseFailure::NoResult { exit_code } => {
                write!(
                    f,
                    "the claude CLI exited with code {exit_code} without a result line"
                )
            }
            PhaseFailure::Refused { message } => write!(
                f,
                "the claude CLI refused its command line: {}; check agent.command and the phase permissions in ralph.toml",
                one_line(message)
            ),
            PhaseFailure::Crashed {
                exit_code,
                signal,
                stderr_tail,
            } => {
                match (exit_code, signal) {
                    (Some(code), _) => write!(
                        f,
                        "the claude CLI exited with code {code} without a result line"
                    )?,
                    (None, Some(signal)) => {
                        write!(
                            f,
                            "the claude CLI was killed by signal {signal} without a result line"
                        )?;
                    }
                    (None, None) => f.write_str("the claude CLI ended without a result line")?,
                }
                let tail = crate::text::tail_chars(stderr_tail.trim(), QUOTE_CHARS);
                if !tail.is_empty() {
                    write!(f, "; stderr: {}", one_line(tail))?;
                }
                Ok(())
            }
        }
    }
}

/// Decides how a phase run ended. `now` places a usage limit's reset time
/// given without a date (`resets 5:42am (UTC)`).
pub(crate) fn classify(summary: &StreamSummary, end: &ProcessEnd, now: Timestamp) -> PhaseVerdict {
    match &summary.result {
        Some(result) if result.is_success() => PhaseVerdict::Success {
            result_text: result.result.clone().unwrap_or_default(),
            permission_denials: result.permission_denials.clone(),
        },
        Some(result) => PhaseVerdict::Failed(classify_error_result(summary, result, now)),
        None => PhaseVerdict::Failed(classify_missing_result(summary, end)),
    }
}

fn classify_error_result(
    summary: &StreamSummary,
    result: &RunResult,
    now: Timestamp,
) -> PhaseFailure {
    let text = result.text_or_errors();
    match result.subtype.as_str() {
        "error_max_turns" => {
            return PhaseFailure::MaxTurns {
                turns: result.num_turns,
            };
        }
        "error_max_budget_usd" => {
            return PhaseFailure::MaxBudget {
                cost_usd: result.total_cost_usd.unwrap_or(0.0),
            };
        }
        _ => {}
    }
    if let Some(limit) = usage_limit(summary, &text, now) {
        return limit;
    }
    if is_auth_failure(
        result.api_error_status,
        summary.last_agent_error.as_deref(),
        &text,
    ) {
        return PhaseFailure::Auth { detail: text };
    }
    match result.api_error_status {
        Some(status) if is_retryable_status(status) => {
            return PhaseFailure::Retryable {
                status: Some(status),
                reason: text,
            };
        }
        Some(status @ 400..=499) => {
            return PhaseFailure::BadRequest {
                status,
                detail: text,
            };
        }
        _ => {}
    }
    if is_transient_text(&text) {
        return PhaseFailure::Retryable {
            status: result.api_error_status,
            reason: text,
        };
    }
    if result.subtype == "error_during_execution" {
        return PhaseFailure::ExecutionError { detail: text };
    }
    PhaseFailure::ErrorResult { text }
}

fn classify_missing_result(summary: &StreamSummary, end: &ProcessEnd) -> PhaseFailure {
    if let Some(kind) = end.timed_out {
        return PhaseFailure::Timeout(kind);
    }
    if let Some(info) = &summary.usage_limit {
        return PhaseFailure::UsageLimit {
            resets_at: info.resets_at.and_then(epoch_to_timestamp),
            kind: info
                .limit_type
                .clone()
                .unwrap_or_else(|| "usage".to_owned()),
        };
    }
    if end.exit_code == Some(0) {
        return PhaseFailure::NoResult { exit_code: 0 };
    }
    if summary.events == 0
        && let Some(message) = refusal_message(&end.stderr_tail)
    {
        return PhaseFailure::Refused { message };
    }
    PhaseFailure::Crashed {
        exit_code: end.exit_code,
        signal: end.signal,
        stderr_tail: end.stderr_tail.clone(),
    }
}

/// A usage limit, from a rejected `rate_limit_event` or from the message.
fn usage_limit(summary: &StreamSummary, text: &str, now: Timestamp) -> Option<PhaseFailure> {
    let from_text = parse_usage_limit(text, now);
    if let Some(info) = &summary.usage_limit {
        let resets_at = info
            .resets_at
            .and_then(epoch_to_timestamp)
            .or_else(|| from_text.as_ref().and_then(|limit| limit.resets_at));
        let kind = info
            .limit_type
            .clone()
            .or_else(|| from_text.map(|limit| limit.kind))
            .unwrap_or_else(|| "usage".to_owned());
        return Some(PhaseFailure::UsageLimit { resets_at, kind });
    }
    let limit = from_text?;
    Some(PhaseFailure::UsageLimit {
        resets_at: limit.resets_at,
        kind: limit.kind,
    })
}

fn is_auth_failure(status: Option<u16>, agent_error: Option<&str>, text: &str) -> bool {
    if matches!(status, Some(401 | 403)) || agent_error == Some("authentication_failed") {
        return true;
    }
    const AUTH_TEXTS: [&str; 5] = [
        "not logged in",
        "invalid api key",
        "please run /login",
        "oauth token has expired",
        "authentication_error",
    ];
    let lower = text.to_lowercase();
    AUTH_TEXTS.iter().any(|needle| lower.contains(needle))
}

/// 408 timeout, 409 conflict, 429 rate limit, 5xx (529 overloaded).
fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500..=599)
}

/// Errors without a usable status that are worth another try.
fn is_transient_text(text: &str) -> bool {
    const TRANSIENT_TEXTS: [&str; 12] = [
        "unable to connect",
        "connection error",
        "connection refused",
        "econnreset",
        "socket hang up",
        "fetch failed",
        "request timed out",
        "overloaded",
        "server-side issue",
        "temporarily limiting requests",
        "empty or malformed response",
        "failed to parse json",
    ];
    let lower = text.to_lowercase();
    TRANSIENT_TEXTS.iter().any(|needle| lower.contains(needle))
}

/// The CLI's own complaint about its arguments, when stderr has one.
fn refusal_message(stderr_tail: &str) -> Option<String> {
    const REFUSAL_TEXTS: [&str; 8] = [
        "unknown option",
        "is invalid",
        "cannot be used with root",
        "requires --verbose",
        "invalid session id",
        "is already in use",
        "no conversation found",
        "missing required argument",
    ];
    stderr_tail
        .lines()
        .map(str::trim)
        .find(|line| {
            let lower = line.to_lowercase();
            REFUSAL_TEXTS.iter().any(|needle| lower.contains(needle))
        })
        .map(str::to_owned)
}

/// `text` on one line, whitespace collapsed, at most [`QUOTE_CHARS`] characters.
fn one_line(text: &str) -> String {
    let line = crate::text::one_line(text);
    if line.chars().count() <= QUOTE_CHARS {
        return line;
    }
    format!("{}…", crate::text::head_chars(&line, QUOTE_CHARS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::stream::{parse_line, summarize};
    use crate::agent::usage_limit::tests::{now, ts};

    fn exited(code: i32) -> ProcessEnd {
        ProcessEnd {
            exit_code: Some(code),
            ..ProcessEnd::default()
        }
    }

    /// A stream of init + one result line built from `fields`.
    fn summary_with_result(fields: &str) -> StreamSummary {
        summarize(&format!(
            "{{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\",\"model\":\"m\"}}\n{{\"type\":\"result\",{fields}}}\n"
        ))
    }

    fn error_result(status: &str, text: &str) -> StreamSummary {
        summary_with_result(&format!(
            "\"subtype\":\"success\",\"is_error\":true,\"api_error_status\":{status},\"result\":{},\"total_cost_usd\":0",
            serde_json::to_string(text).expect("a string serialises")
        ))
    }

    #[track_caller]
    fn check(summary: &StreamSummary, end: &ProcessEnd, expected: PhaseFailure) {
        assert_eq!(
            classify(summary, end, now()),
            PhaseVerdict::Failed(expected)
        );
    }

    #[track_caller]
    fn check_error(status: &str, text: &str, expected: PhaseFailure) {
        check(&error_result(status, text), &exited(1), expected);
    }

    #[test]
    fn success_needs_a_result_with_is_error_false() {
        let summary = summarize(include_str!(
            "../../tests/fixtures/stream/success-complete.jsonl"
        ));
        let verdict = classify(&summary, &exited(0), now());
        assert_eq!(
            verdict,
            PhaseVerdict::Success {
                result_text: "The file fake_output.txt was created.\n<promise>COMPLETE</promise>"
                    .to_owned(),
                permission_denials: vec![],
            }
        );
        assert!(verdict.declares_completion());
    }

    #[test]
    fn a_result_counts_whatever_the_exit_and_even_after_a_timeout() {
        let summary = summary_with_result(r#""subtype":"success","is_error":false,"result":"ok""#);
        for end in [
            exited(1),
            ProcessEnd {
                exit_code: None,
                signal: Some(9),
                timed_out: Some(TimeoutKind::Idle),
                stderr_tail: String::new(),
            },
        ] {
            assert!(
                matches!(
                    classify(&summary, &end, now()),
                    PhaseVerdict::Success { .. }
                ),
                "{end:?}"
            );
        }
    }

    #[test]
    fn success_keeps_permission_denials() {
        let summary = summary_with_result(
            r#""subtype":"success","is_error":false,"result":"could not write","permission_denials":[{"tool_name":"Write","tool_use_id":"t","tool_input":{}}]"#,
        );
        assert_eq!(
            classify(&summary, &exited(0), now()),
            PhaseVerdict::Success {
                result_text: "could not write".to_owned(),
                permission_denials: vec!["Write".to_owned()],
            }
        );
    }

    #[test]
    fn marker_outside_the_result_is_no_completion() {
        let summary = summarize(include_str!(
            "../../tests/fixtures/stream/read-marker-no-complete.jsonl"
        ));
        let verdict = classify(&summary, &exited(0), now());
        assert!(
            matches!(verdict, PhaseVerdict::Success { .. }),
            "{verdict:?}"
        );
        assert!(!verdict.declares_completion());
    }

    #[test]
    fn marker_in_a_failed_result_is_no_completion() {
        let summary = summary_with_result(
            r#""subtype":"success","is_error":true,"api_error_status":500,"result":"<promise>COMPLETE</promise>""#,
        );
        assert!(!classify(&summary, &exited(1), now()).declares_completion());
    }

    #[test]
    fn limit_words_in_a_successful_result_are_no_limit() {
        let text = "You've hit your session limit · resets 5:42am (UTC)\nThe 5-hour limit and the rate limit are documented.";
        let summary = summary_with_result(&format!(
            "\"subtype\":\"success\",\"is_error\":false,\"result\":{}",
            serde_json::to_string(text).expect("serialises")
        ));
        assert!(matches!(
            classify(&summary, &exited(0), now()),
            PhaseVerdict::Success { .. }
        ));
    }

    #[test]
    fn subtype_other_than_success_fails_even_without_is_error() {
        let summary = summary_with_result(
            r#""subtype":"error_during_execution","is_error":false,"errors":["aborted"]"#,
        );
        check(
            &summary,
            &exited(1),
            PhaseFailure::ExecutionError {
                detail: "aborted".to_owned(),
            },
        );
    }

    #[test]
    fn max_turns_and_budget() {
        let summary = summarize(include_str!("../../tests/fixtures/stream/max-turns.jsonl"));
        check(
            &summary,
            &exited(1),
            PhaseFailure::MaxTurns { turns: Some(4) },
        );
        let summary = summary_with_result(
            r#""subtype":"error_max_budget_usd","is_error":true,"total_cost_usd":0.27,"errors":["Reached maximum budget ($0.25)"]"#,
        );
        check(
            &summary,
            &exited(1),
            PhaseFailure::MaxBudget { cost_usd: 0.27 },
        );
    }

    #[test]
    fn usage_limit_from_the_rate_limit_event() {
        let summary = summarize(include_str!(
            "../../tests/fixtures/stream/usage-limit-session.jsonl"
        ));
        let expected = PhaseFailure::UsageLimit {
            resets_at: Some(Timestamp::from_second(1_795_326_126).expect("in range")),
            kind: "five_hour".to_owned(),
        };
        assert!(!expected.is_retryable());
        check(&summary, &exited(1), expected);
    }

    #[test]
    fn usage_limit_from_the_text() {
        check_error(
            "429",
            "You've hit your session limit · resets 5:42am (UTC)",
            PhaseFailure::UsageLimit {
                resets_at: Some(ts("2026-01-21T05:42:00Z")),
                kind: "session".to_owned(),
            },
        );
        check_error(
            "429",
            "You've hit your weekly limit · resets Nov 24, 12:15pm (Europe/Paris)",
            PhaseFailure::UsageLimit {
                resets_at: Some(ts("2026-11-24T11:15:00Z")),
                kind: "weekly".to_owned(),
            },
        );
        check_error(
            "null",
            "You\u{2019}ve hit your Opus limit · resets Jan 22 at 9am (America/New_York)",
            PhaseFailure::UsageLimit {
                resets_at: Some(ts("2026-01-22T14:00:00Z")),
                kind: "Opus".to_owned(),
            },
        );
        check_error(
            "429",
            "You've hit your session limit · resets someday (Mars/Olympus)",
            PhaseFailure::UsageLimit {
                resets_at: None,
                kind: "session".to_owned(),
            },
        );
    }

    #[test]
    fn retryable_api_errors() {
        #[track_caller]
        fn check_retryable(status: &str, text: &str) {
            let verdict = classify(&error_result(status, text), &exited(1), now());
            let PhaseVerdict::Failed(failure) = verdict else {
                panic!("{text} succeeded");
            };
            assert!(failure.is_retryable(), "{status} {text}: {failure:?}");
            assert!(!failure.is_fatal());
        }
        check_retryable(
            "429",
            "API Error: Request rejected (429) · Number of request tokens has exceeded your per-minute rate limit",
        );
        check_retryable(
            "429",
            "API Error: Server is temporarily limiting requests (not your usage limit) · Rate limited",
        );
        check_retryable(
            "529",
            "API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment. If it persists, check your inference gateway (127.0.0.1:8080).",
        );
        check_retryable(
            "500",
            "API Error: 500 Internal server error. This is a server-side issue, usually temporary",
        );
        check_retryable("503", "API Error: 503 upstream connect error");
        check_retryable(
            "429",
            "API Error: Request rejected (429) · Rate limit reached for requests",
        );
        check_retryable(
            "null",
            "API Error: Unable to connect to API (ConnectionRefused)",
        );
        check_retryable(
            "null",
            "API Error: Unable to connect to API (FailedToOpenSocket)",
        );
        check_retryable("null", "Request timed out");
        check_retryable(
            "null",
            "API Error: API returned an empty or malformed response (HTTP 200) — check for a stop_sequence",
        );
    }

    #[test]
    fn retryable_keeps_status_and_reason() {
        check_error(
            "529",
            "API Error: 529 Overloaded.",
            PhaseFailure::Retryable {
                status: Some(529),
                reason: "API Error: 529 Overloaded.".to_owned(),
            },
        );
        check_error(
            "null",
            "Request timed out",
            PhaseFailure::Retryable {
                status: None,
                reason: "Request timed out".to_owned(),
            },
        );
    }

    #[test]
    fn auth_failures() {
        let summary = summarize(include_str!(
            "../../tests/fixtures/stream/not-logged-in.jsonl"
        ));
        let failure = PhaseFailure::Auth {
            detail: "Not logged in · Please run /login".to_owned(),
        };
        assert!(failure.is_fatal());
        assert!(failure.to_string().contains("claude /login"), "{failure}");
        assert!(
            failure.to_string().contains("ANTHROPIC_API_KEY"),
            "{failure}"
        );
        check(&summary, &exited(1), failure);
        check_error(
            "401",
            "Invalid API key · Fix external API key",
            PhaseFailure::Auth {
                detail: "Invalid API key · Fix external API key".to_owned(),
            },
        );
        check_error(
            "403",
            "API Error: 403 permission_error",
            PhaseFailure::Auth {
                detail: "API Error: 403 permission_error".to_owned(),
            },
        );
    }

    #[test]
    fn bad_request_is_not_retried() {
        let text = "API Error: 400 prompt is too long: 210000 tokens > 200000 maximum";
        check_error(
            "400",
            text,
            PhaseFailure::BadRequest {
                status: 400,
                detail: text.to_owned(),
            },
        );
        let failure = PhaseFailure::BadRequest {
            status: 400,
            detail: text.to_owned(),
        };
        assert!(!failure.is_retryable());
        check_error(
            "404",
            "API Error: 404 model: claude-nope not found",
            PhaseFailure::BadRequest {
                status: 404,
                detail: "API Error: 404 model: claude-nope not found".to_owned(),
            },
        );
    }

    #[test]
    fn other_errors_are_error_results() {
        let text = "API Error: Claude's response exceeded the 64000 output token maximum. To configure this behavior, set the CLAUDE_CODE_MAX_OUTPUT_TOKENS environment variable.";
        check_error(
            "null",
            text,
            PhaseFailure::ErrorResult {
                text: text.to_owned(),
            },
        );
    }

    #[test]
    fn no_result_line() {
        let interrupted = summarize(include_str!(
            "../../tests/fixtures/stream/interrupted-no-result.jsonl"
        ));
        check(
            &interrupted,
            &exited(0),
            PhaseFailure::NoResult { exit_code: 0 },
        );
        check(
            &interrupted,
            &ProcessEnd {
                exit_code: Some(143),
                ..ProcessEnd::default()
            },
            PhaseFailure::Crashed {
                exit_code: Some(143),
                signal: None,
                stderr_tail: String::new(),
            },
        );
        check(
            &StreamSummary::default(),
            &ProcessEnd {
                exit_code: None,
                signal: Some(9),
                timed_out: None,
                stderr_tail: "panic: out of memory\n".to_owned(),
            },
            PhaseFailure::Crashed {
                exit_code: None,
                signal: Some(9),
                stderr_tail: "panic: out of memory\n".to_owned(),
            },
        );
    }

    #[test]
    fn timeouts_win_over_exit_codes() {
        let interrupted = summarize(include_str!(
            "../../tests/fixtures/stream/interrupted-no-result.jsonl"
        ));
        for kind in [TimeoutKind::WallClock, TimeoutKind::Idle] {
            let end = ProcessEnd {
                exit_code: Some(0),
                signal: None,
                timed_out: Some(kind),
                stderr_tail: String::new(),
            };
            check(&interrupted, &end, PhaseFailure::Timeout(kind));
        }
    }

    #[test]
    fn rejected_limit_without_result_is_a_usage_limit() {
        let mut summary = StreamSummary::default();
        summary.record(
            parse_line(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1795326126000,"rateLimitType":"seven_day"}}"#)
                .expect("parses"),
        );
        check(
            &summary,
            &exited(1),
            PhaseFailure::UsageLimit {
                resets_at: Some(Timestamp::from_second(1_795_326_126).expect("in range")),
                kind: "seven_day".to_owned(),
            },
        );
    }

    #[test]
    fn cli_refusals_before_any_output() {
        #[track_caller]
        fn check_refused(stderr: &str, expected_message: &str) {
            let end = ProcessEnd {
                exit_code: Some(1),
                signal: None,
                timed_out: None,
                stderr_tail: stderr.to_owned(),
            };
            let expected = PhaseFailure::Refused {
                message: expected_message.to_owned(),
            };
            assert!(expected.is_fatal());
            check(&StreamSummary::default(), &end, expected);
        }
        check_refused(
            "error: unknown option '--bogus-flag'\n",
            "error: unknown option '--bogus-flag'",
        );
        check_refused(
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n",
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
        );
        check_refused(
            "Error: When using --print, --output-format=stream-json requires --verbose\n",
            "Error: When using --print, --output-format=stream-json requires --verbose",
        );
        // After the stream started, the same words are a crash, not a refusal.
        let started = summarize(include_str!(
            "../../tests/fixtures/stream/interrupted-no-result.jsonl"
        ));
        let end = ProcessEnd {
            exit_code: Some(1),
            signal: None,
            timed_out: None,
            stderr_tail: "error: unknown option\n".to_owned(),
        };
        assert!(matches!(
            classify(&started, &end, now()),
            PhaseVerdict::Failed(PhaseFailure::Crashed { .. })
        ));
    }

    #[test]
    fn messages_are_one_bounded_line() {
        let long_text = format!("API Error: 500 {}\nsecond line", "x".repeat(5000));
        let failures = [
            PhaseFailure::UsageLimit {
                resets_at: Some(ts("2026-01-21T05:42:00Z")),
                kind: "five_hour".to_owned(),
            },
            PhaseFailure::UsageLimit {
                resets_at: None,
                kind: "weekly".to_owned(),
            },
            PhaseFailure::Retryable {
                status: Some(500),
                reason: long_text.clone(),
            },
            PhaseFailure::Retryable {
                status: None,
                reason: "Request timed out".to_owned(),
            },
            PhaseFailure::Auth {
                detail: "Not logged in".to_owned(),
            },
            PhaseFailure::BadRequest {
                status: 400,
                detail: long_text.clone(),
            },
            PhaseFailure::MaxTurns { turns: Some(3) },
            PhaseFailure::MaxTurns { turns: None },
            PhaseFailure::MaxBudget { cost_usd: 0.25 },
            PhaseFailure::ExecutionError {
                detail: "aborted".to_owned(),
            },
            PhaseFailure::ErrorResult {
                text: long_text.clone(),
            },
            PhaseFailure::Timeout(TimeoutKind::WallClock),
            PhaseFailure::Timeout(TimeoutKind::Idle),
            PhaseFailure::NoResult { exit_code: 0 },
            PhaseFailure::Refused {
                message: "error: unknown option".to_owned(),
            },
            PhaseFailure::Crashed {
                exit_code: None,
                signal: Some(9),
                stderr_tail: long_text,
            },
            PhaseFailure::Crashed {
                exit_code: Some(1),
                signal: None,
                stderr_tail: String::new(),
            },
        ];
        for failure in failures {
            let message = failure.to_string();
            assert!(!message.contains('\n'), "{message}");
            assert!(message.chars().count() < 500, "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
        assert_eq!(
            PhaseFailure::UsageLimit {
                resets_at: Some(ts("2026-01-21T05:42:00Z")),
                kind: "five_hour".to_owned(),
            }
            .to_string(),
            "usage limit reached (five_hour), resets at 2026-01-21T05:42:00Z"
        );
        assert_eq!(
            PhaseFailure::Crashed {
                exit_code: None,
                signal: Some(9),
                stderr_tail: "line one\nboom\n".to_owned(),
            }
            .to_string(),
            "the claude CLI was killed by signal 9 without a result line; stderr: line one boom"
        );
    }
}
